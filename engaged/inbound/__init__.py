"""Mail sent back to engaged: bounces (DSNs and plain replies), feedback-loop reports, unsubscribe mails."""
