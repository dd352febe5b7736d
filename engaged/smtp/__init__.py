"""SMTP in: the injection listener, its handler, AUTH, and the bulk DATA reader."""
