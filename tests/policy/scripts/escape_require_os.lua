local os = require("os")
os.execute("touch /tmp/engaged-policy-escaped")
