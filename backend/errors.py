"""Errors the backend core raises towards the local API, each with the HTTP answer it becomes.

    OperationError            code, message, http_status: shown to the caller as is
    ├── NotLoggedIn           409 not_logged_in: up/rotate before login
    └── LoginFailed           the join link, the pinning or the server refused the login

The local API turns any of them into `{"error": {code, message}}`; the CLI prints the message.
"""

from __future__ import annotations


class OperationError(Exception):
    def __init__(self, message: str, *, code: str = "failed", http_status: int = 400) -> None:
        super().__init__(message)
        self.message, self.code, self.http_status = message, code, http_status


class NotLoggedIn(OperationError):
    def __init__(self, message: str = "not logged in: run `pcloud login JOIN-LINK` first") -> None:
        super().__init__(message, code="not_logged_in", http_status=409)


class LoginFailed(OperationError):
    pass
