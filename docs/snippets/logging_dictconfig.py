"""The client in every log line, configured with logging.config.dictConfig.

The same dictionary works as Django's ``LOGGING`` setting. Shown in
docs/downstream/logging.md; run by tests/test_logcontext.py.
"""

# [config]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "realip": {"()": "realip.logcontext.ClientFilter"},
    },
    "formatters": {
        "with_client": {"format": "%(levelname)s %(client)s %(client_source)s %(peer)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "with_client",
            "filters": ["realip"],  # on the handler: every record it writes, whichever logger
        },
    },
    "root": {"handlers": ["console"], "level": "INFO"},
}
# [/config]

if __name__ == "__main__":
    import logging.config

    logging.config.dictConfig(LOGGING)
