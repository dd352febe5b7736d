// engaged dashboard: live updates over Server-Sent Events. Every value from an event is inserted with
// textContent (never as markup); the pages work without this file.
"use strict";

(() => {
  const body = document.body;
  const TYPES = ["injection", "delivery", "delay", "bounce", "policy_rejection", "initial_open", "open", "click",
    "link_unsubscribe"];
  const BOUNCE = {
    "1": "Undetermined", "10": "Invalid recipient", "20": "Soft bounce", "21": "DNS failure", "22": "Mailbox full",
    "23": "Too large", "24": "Timeout", "25": "Admin failure", "30": "Generic bounce: no RCPT",
    "40": "Generic bounce", "50": "Mail block", "51": "Spam block", "52": "Spam content",
    "53": "Prohibited attachment", "54": "Relaying denied", "60": "Auto-reply", "70": "Transient failure",
    "80": "Subscribe", "90": "Unsubscribe", "100": "Challenge-response",
  };
  const MACHINE = {
    apple_mpp: "Apple Mail Privacy Protection", google_image_proxy: "Google image proxy",
    security_scanner: "Security scanner", prefetch: "Link preview / prefetch",
  };
  const HUMAN_COLOUR = "#3a72c4";
  const MACHINE_COLOUR = "#e8913a";

  const number = (value) => Number(value || 0).toLocaleString("en-US");
  const percent = (value) => (value === null || value === undefined ? "–" : (value * 100).toFixed(1) + " %");
  const when = (epoch) => new Date(epoch * 1000).toISOString().slice(0, 19).replace("T", " ");

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function link(text, path, params) {
    const anchor = el("a", text);
    anchor.href = path + "?" + new URLSearchParams(params).toString();
    return anchor;
  }

  // The same rules as engaged/web/feed.py summarize().
  function summarize(ev) {
    switch (ev.type) {
      case "injection": return "subject: " + (ev.subject || "");
      case "delivery": return "accepted by " + (ev.ip_address || ev.routing_domain || "");
      case "delay":
      case "bounce":
      case "out_of_band": {
        const code = String(ev.bounce_class || "");
        return "class " + code + " (" + (BOUNCE[code] || "unknown") + "): " + (ev.reason || "");
      }
      case "policy_rejection": return ev.reason || "";
      case "spam_complaint":
        return (ev.fbtype || "abuse") + " complaint" + (ev.report_by ? " reported by " + ev.report_by : "");
      case "list_unsubscribe":
        return ev.user_agent || "by mail from " + (ev.mailfrom || "");
      case "click":
      case "link_unsubscribe":
        return ev.target_link_name ? ev.target_link_name + " → " + (ev.target_link_url || "") : (ev.target_link_url || "");
      default: return ev.user_agent || "";
    }
  }

  function machineOf(ev) {
    const kind = ev.machine_engagement ? ev.machine_engagement.kind : null;
    return kind ? (MACHINE[kind] || kind.replace(/_/g, " ")) : "";
  }

  function feedRow(seq, ev) {
    const row = el("tr", null, "type-" + ev.type + " fresh");
    row.dataset.seq = String(seq);
    row.append(el("td", when(Date.parse(ev.timestamp) / 1000), "when"));
    const kind = el("td");
    kind.append(el("span", ev.type, "badge " + ev.type));
    const machine = machineOf(ev);
    if (machine) kind.append(" ", el("span", machine, "machine"));
    row.append(kind);
    const campaign = el("td");
    campaign.append(link(ev.campaign_id || "(none)", "/campaign", [["id", ev.campaign_id || ""]]));
    row.append(campaign);
    const recipient = el("td");
    recipient.append(link(ev.rcpt_to || "", "/message", [["q", ev.message_id || ""]]));
    row.append(recipient);
    row.append(el("td", summarize(ev), "detail"));
    return row;
  }

  function setState(text, live) {
    const state = document.getElementById("live-state");
    if (state) {
      state.textContent = text;
      state.className = "live-state " + (live ? "on" : "off");
    }
    body.dataset.live = live ? "on" : "off";
  }

  function subscribe(path, handlers) {
    const source = new EventSource(path);
    source.addEventListener("open", () => setState("● live", true));
    source.addEventListener("error", () => setState("reconnecting…", false));
    for (const [name, handler] of Object.entries(handlers)) source.addEventListener(name, handler);
    return source;
  }

  function eventHandlers(onEvent) {
    const handlers = {};
    for (const type of TYPES) handlers[type] = (message) => onEvent(Number(message.lastEventId), JSON.parse(message.data));
    return handlers;
  }

  // Runs `task` soon, at most once per `gap` ms and never twice at once; calls during a run queue one more.
  function throttle(task, gap) {
    let running = false;
    let again = false;
    let timer = null;
    let last = 0;
    const run = async () => {
      timer = null;
      running = true;
      last = Date.now();
      try {
        await task();
      } catch (error) {
        setState("update failed: " + error.message, false);
      } finally {
        running = false;
        if (again) {
          again = false;
          schedule();
        }
      }
    };
    const schedule = () => {
      if (running) {
        again = true;
      } else if (timer === null) {
        timer = setTimeout(run, Math.max(0, last + gap - Date.now()));
      }
    };
    return schedule;
  }

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  function feed(tableId, limit) {
    const tbody = document.querySelector("#" + tableId + " tbody");
    const empty = document.getElementById(tableId + "-empty");
    return (seq, ev) => {
      if (!tbody || tbody.querySelector('tr[data-seq="' + seq + '"]')) return;
      tbody.prepend(feedRow(seq, ev));
      if (empty) empty.hidden = true;
      while (tbody.rows.length > limit) tbody.deleteRow(-1);
    };
  }

  const COLUMNS = [
    ["injected", number], ["delivered", number], ["bounced", number], ["delayed", number],
    ["opens_human", number, "human"], ["opens_machine", number, "machine"],
    ["clicks_human", number, "human"], ["clicks_machine", number, "machine"],
    ["ctr", percent], ["unsubscribe_rate", percent], ["complaint_rate", percent], ["last_activity", (value) => (value ? when(value) : "–"), "when"],
  ];

  function campaignsPage() {
    const tbody = document.querySelector("#campaigns tbody");
    const empty = document.getElementById("campaigns-empty");
    const range = Array.from(new URLSearchParams(body.dataset.range || ""));
    const refresh = throttle(async () => {
      const data = await getJSON("/ui/campaigns.json?" + body.dataset.query);
      const before = new Map();
      for (const cell of tbody.querySelectorAll("td[data-col]")) {
        before.set(cell.parentElement.dataset.campaign + "\u0000" + cell.dataset.col, cell.textContent);
      }
      const rows = document.createDocumentFragment();
      for (const row of data.rows) {
        const tr = el("tr");
        tr.dataset.campaign = row.campaign_id;
        const name = el("td");
        name.dataset.col = "campaign_id";
        name.append(link(row.campaign_id || "(no campaign)", "/campaign", [["id", row.campaign_id], ...range]));
        tr.append(name);
        for (const [col, format, extra] of COLUMNS) {
          const cell = el("td", format(row[col]), "num" + (extra ? " " + extra : ""));
          cell.dataset.col = col;
          const old = before.get(row.campaign_id + "\u0000" + col);
          if (old !== undefined && old !== cell.textContent && col !== "last_activity") cell.classList.add("changed");
          tr.append(cell);
        }
        rows.append(tr);
      }
      tbody.replaceChildren(rows);
      if (empty) empty.hidden = data.rows.length > 0;
    }, 1000);
    subscribe("/ui/ticks", { tick: refresh });
  }

  // A bar per bucket [start, start + width): the machine series is drawn at human + machine, the human one
  // over it, so the two read as one stacked bar.
  function stackedChart(container) {
    let plot = null;
    let parts = { human: [], machine: [], width: 60, span: 0 };
    const bars = uPlot.paths.bars({ size: [0.9, 64], align: 1 });
    const tick = (epoch) => {
      const text = when(epoch);
      if (parts.width >= 86400) return text.slice(5, 10);
      return parts.span > 86400 ? text.slice(5, 16) : text.slice(11, 16);
    };
    const legendValue = (side) => (u, value, seriesIndex, index) => (index === null ? "–" : number(parts[side][index]));
    const create = (data) => {
      plot = new uPlot({
        title: container.dataset.title, width: Math.max(container.clientWidth, 300), height: 200,
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        cursor: { points: { show: false } },
        scales: {
          x: { time: true, range: (u, min, max) => [min, max + parts.width] },
          y: { range: (u, min, max) => [0, Math.max(4, Math.ceil(max * 1.15))] },
        },
        axes: [
          { space: 110, values: (u, ticks) => ticks.map(tick) },
          { values: (u, ticks) => ticks.map((value) => (Number.isInteger(value) ? number(value) : "")) },
        ],
        series: [
          { value: (u, value) => (value === null ? "–" : when(value) + " UTC") },
          { label: "machine", fill: MACHINE_COLOUR, stroke: MACHINE_COLOUR, width: 0, paths: bars,
            points: { show: false }, value: legendValue("machine") },
          { label: "human", fill: HUMAN_COLOUR, stroke: HUMAN_COLOUR, width: 0, paths: bars,
            points: { show: false }, value: legendValue("human") },
        ],
      }, data, container);
    };
    addEventListener("resize", () => plot && plot.setSize({ width: Math.max(container.clientWidth, 300), height: 200 }));
    return (series, human, machine) => {
      const times = series.start;
      parts = { human, machine, width: series.width, span: times.length ? times[times.length - 1] - times[0] : 0 };
      const data = [times, human.map((value, index) => value + machine[index]), human];
      if (plot === null) create(data);
      else plot.setData(data);
    };
  }

  function campaignPage() {
    const summary = document.getElementById("summary");
    const draw = [];
    if (typeof uPlot !== "undefined") {
      const opens = stackedChart(document.getElementById("opens-chart"));
      const clicks = stackedChart(document.getElementById("clicks-chart"));
      draw.push((s) => opens(s, s.opens_human, s.opens_machine), (s) => clicks(s, s.clicks_human, s.clicks_machine));
    }
    const refresh = throttle(async () => {
      const data = await getJSON("/ui/campaign.json?" + body.dataset.query);
      const row = data.summary || {};
      for (const [col, format] of COLUMNS) {
        const cell = summary.querySelector('[data-col="' + col + '"]');
        const text = format(row[col]);
        if (cell && cell.textContent !== text) {
          cell.textContent = text;
          cell.classList.remove("changed");
          void cell.offsetWidth;
          cell.classList.add("changed");
        }
      }
      for (const render of draw) render(data.series);
    }, 750);
    refresh();
    const add = feed("feed", 50);
    subscribe("/ui/stream?" + body.dataset.stream + "&last_event_id=" + body.dataset.after,
      eventHandlers((seq, ev) => {
        add(seq, ev);
        refresh();
      }));
  }

  function livePage() {
    const add = feed("feed", 200);
    const filters = body.dataset.stream ? body.dataset.stream + "&" : "";
    subscribe("/ui/stream?" + filters + "last_event_id=" + body.dataset.after, eventHandlers(add));
  }

  const pages = { campaigns: campaignsPage, campaign: campaignPage, live: livePage };
  const start = pages[body.dataset.page];
  if (start) start();
})();
