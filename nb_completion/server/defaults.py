"""The server's documented defaults, in one light module (the CLI's parser reads them without
importing uvicorn or torch)."""

DEFAULT_MAX_TOKENS_CAP = 4096  # tokens one request may generate; max_tokens 0 means up to this
DEFAULT_MAX_CONNECTIONS = 1000  # open connections before the longest-idle one is closed
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds a connection has to send a request's headers
KEEP_ALIVE_TIMEOUT = 5  # seconds an idle keep-alive connection stays open after a response
