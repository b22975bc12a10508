"""Command-line tools around the served model repository: serve, client, server launcher."""
