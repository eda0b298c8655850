"""`redirect_https` on a listener: every request is answered 308 to the same URL on https.

The decision (which Location, refused Hosts) is `lb.core.redirect`; this filter answers with
it before any server is asked.
"""

from __future__ import annotations

from lb.core.errors import Reason
from lb.core.redirect import https_location
from lb.filters.context import BuildContext
from lb.proxy.http.pipeline import Answer, Filter, RequestResult
from lb.proxy.http.session import Session


class RedirectHttps(Filter):
    name = "redirect_https"

    def on_request(self, session: Session) -> RequestResult:
        assert session.head is not None
        location = https_location(session.head)
        if location is None:
            return Answer.refuse(Reason.bad_request, "no usable Host header to redirect to https")
        return Answer(308, b"Permanent Redirect", [(b"location", location)])


def build(ctx: BuildContext) -> Filter | None:
    return RedirectHttps() if ctx.listener.redirect_https else None
