"""Requests aiohttp cannot parse (an oversized request line or header, a bad Content-Length, bad
chunked encoding), and clients that leave mid-request: problem JSON for the former instead of
aiohttp's text/plain, and for both a throttled WARNING line instead of an ERROR with a traceback
each, since any client can cause them at will."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import _ErrInfo
from aiohttp.web_request import BaseRequest

from provider.api.problems import problem_response
from provider.logs import ThrottledWarnings

log = logging.getLogger("provider.http")

CLIENT_ERRORS = web.AppKey("client_errors", ThrottledWarnings)


def client_errors() -> ThrottledWarnings:
    return ThrottledWarnings(log)


class ProblemRequestHandler(web.RequestHandler):
    """aiohttp's protocol for one connection, answering its parser's errors as problems."""

    def __init__(self, server: web.Server, warnings: ThrottledWarnings, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self._warnings = warnings

    def data_received(self, data: bytes) -> None:
        request = self._current_request
        queued = len(self._messages)
        super().data_received(data)
        if request is None or request.content.is_eof() or len(self._messages) == queued:
            return
        error, _ = self._messages[-1]
        if isinstance(error, _ErrInfo) and error.exc is not None:
            # A parser error within the body being read (e.g. bad chunked encoding after the
            # headers): aiohttp's C parser queues it as the next request and leaves the handler
            # waiting for a body that will never end. The handler gets it instead, and answers.
            self._messages.pop()
            request.content.set_exception(error.exc)
            request.content.feed_eof()  # nothing more to read: no lingering read of the body
            self.close()  # after this answer: the parser cannot find the next request

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:  # a fault of ours (an error past the middlewares): as aiohttp logs it
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            detail = "internal error"
            slug = "internal"
        else:
            reason = (getattr(exc, "message", None) or message or "").strip().split("\n")[0][:120]
            detail = f"the request is not valid HTTP: {reason}" if reason else "the request is not valid HTTP"
            slug = "malformed-request"
            kind = type(exc).__name__ if exc is not None else "BadRequest"
            self._warnings.warn(
                f"malformed-request:{kind}", "malformed request from %s: %s", request.remote, reason
            )
        if request.writer.output_size > 0:  # a response has begun: the connection cannot carry this one
            raise ConnectionError("response already begun; cannot send the error")
        response = problem_response(status, detail, slug)
        response.force_close()  # aiohttp's parser cannot be trusted to find the next request
        return response
