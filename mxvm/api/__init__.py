"""The REST API (aiohttp only): app factory, a module per resource, one error middleware."""
