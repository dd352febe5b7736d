"""Engagement rewriting (④ rewrite), pure: `mime.rewrite_message` for messages, `html`/`text` for parts."""
