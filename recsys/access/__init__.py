"""Who may call the API: API keys and their scopes, the check of a presented key, feedback rate limits."""
