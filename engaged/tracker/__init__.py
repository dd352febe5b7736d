"""⑦ The engagement tracker: the public HTTP service that answers opens and clicks and journals their events."""
