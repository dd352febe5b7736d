-- Top level: os is not there, so loading fails.
os.execute("touch /tmp/engaged-policy-escaped")
