"""The suppression list: recipients engaged must not send to, per type (transactional / non_transactional)."""
