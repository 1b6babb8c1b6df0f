"""One HTTP call with a JSON body and answer, for gates and webhooks: urllib's errors become
one short reason that never quotes the URL (a webhook's URL carries its secret, and a gate's
may come from an environment variable for the same reason)."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request


class Unanswered(Exception):
    """The call got no usable answer; str() says why, without the URL."""


def call(url: str, *, method: str = "GET", body: object = None, timeout: float = 5.0, answer: bool = True) -> object:
    """Send `body` as JSON (when given) and return the answer's JSON (with `answer`; a webhook's
    answer, Slack's `ok` for one, is not read), or raise Unanswered."""
    data = json.dumps(body, default=str).encode() if body is not None else None
    headers = {"Accept": "application/json", "User-Agent": "rollout"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers),
                                    timeout=timeout) as response:
            raw = response.read(1_000_000)
    except urllib.error.HTTPError as exc:
        raise Unanswered(f"HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise Unanswered(str(exc.reason) if isinstance(exc.reason, OSError) else type(exc).__name__) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # their text may quote the URL
        raise Unanswered(type(exc).__name__) from None
    if not answer:
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Unanswered("the answer is not JSON") from None
