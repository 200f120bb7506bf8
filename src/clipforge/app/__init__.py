"""The web app: `server.create_app` builds the FastAPI app (JSON API + static page), `commands`
adds `clipforge serve`. Nothing heavy is imported here, so the CLI starts fast."""
