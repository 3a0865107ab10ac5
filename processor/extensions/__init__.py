"""Extensions (``extensions:`` and ``service.extensions``): the bearer-token authenticator receivers use
and the health check."""
