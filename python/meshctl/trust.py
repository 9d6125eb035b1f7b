"""Trust in the control plane's HTTPS certificate, for every client of the API:
sidecars, gateways and the CLI. Standard library only at import (the sidecar
stays lean).

Where trust comes from, first match wins (``Trust``):

1. ``ca_file`` (``--ca-file``): the CA certificates in that PEM bundle, and no others.
2. ``pin`` (``--ca-hash sha256:<hex>``): like kubeadm's ``--discovery-token-ca-cert-hash``,
   the SHA-256 of the CA certificate's DER-encoded SubjectPublicKeyInfo (the public key
   with its algorithm; re-issuing the CA with the same key keeps the pin). The client asks
   ``GET /api/v1/ca/serving`` (no token) for the CA, over a connection it does not verify
   yet, and takes the CA only if its pin matches; every later request, the first with a
   token among them, verifies the server against that CA. A wrong pin is a ``TrustError``
   before any token is sent.
3. ``store`` (a sidecar's ``control-plane-ca.pem``): the CAs a sidecar trusted after its
   bootstrap, so that a restart needs no pin, and a pin is checked against it first.
4. Otherwise the system's trust store, plus ``extra`` (the CLI on the control-plane host
   adds the data dir's ``tls/ca.pem``).

After bootstrap from a pin or the store, roots the control plane hands out over the
verified connection (the mesh trust bundle, see ``learn``) are trusted too and kept in
the store: a root rotation of the mesh CA, which also re-issues the serving certificate,
never strands a sidecar.

Plain HTTP (``plain_http``) is allowed to a loopback host; elsewhere only when asked for
(``--insecure``), with a warning: join tokens and CSRs would travel in clear.

Compute a pin by hand::

    openssl x509 -in ca.pem -pubkey -noout | openssl pkey -pubin -outform der | sha256sum
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from meshctl.client import TrustError, Unreachable
from meshctl.secretfile import write_secret

#: The API path that names the CA of the serving certificate; it needs no token.
SERVING_CA_PATH = "/api/v1/ca/serving"
_PIN = re.compile(r"^sha256:([0-9a-f]{64})$")


# === loopback and plain HTTP ===


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine only."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http(url: str, *, insecure: bool) -> str | None:
    """For an http:// `url`: None on loopback, a warning to print when `insecure` allows it,
    ValueError otherwise. https:// URLs: None."""
    parts = urlsplit(url)
    if parts.scheme != "http" or is_loopback(parts.hostname or ""):
        return None
    if not insecure:
        raise ValueError(
            f"{url} is plain HTTP to a host other than this one: join tokens, API tokens and CSRs would travel "
            "in clear. Use https:// (the control plane serves HTTPS unless bound to loopback), or --insecure"
        )
    return f"talking plain HTTP to {parts.netloc} (--insecure): tokens and CSRs travel in clear"


# === pins ===


def parse_pin(text: str) -> str:
    """`sha256:<64 hex digits>`, lowercased; ValueError naming the expected form otherwise."""
    pin = text.strip().lower()
    if not _PIN.match(pin):
        raise ValueError(
            f"{text!r} is not a CA pin: expected sha256:<64 hex digits>, the SHA-256 of the CA certificate's "
            "DER SubjectPublicKeyInfo"
        )
    return pin


def ca_pin(cert_pem: str) -> str:
    """The pin of the (first) certificate in `cert_pem`: sha256 of its DER SubjectPublicKeyInfo."""
    from meshctl import _core  # (read by the data plane's library: no `cryptography` in a sidecar)

    der = _core.certificates_der(cert_pem)[0]
    return "sha256:" + hashlib.sha256(_core.public_key_info(der)).hexdigest()


def split_pems(text: str) -> list[str]:
    """The PEM certificates in `text`, each as its own string."""
    end = "-----END CERTIFICATE-----"
    blocks = [b[b.find("-----BEGIN CERTIFICATE-----") :] for b in text.split(end)]
    return [b + end + "\n" for b in blocks if "-----BEGIN CERTIFICATE-----" in b]


def context_for(anchors: list[str], *, system: bool = False) -> ssl.SSLContext:
    """A client context trusting the PEM certificates `anchors` (and the system's roots when
    `system`); any of them may be an intermediate (partial chains are accepted)."""
    ctx = ssl.create_default_context() if system else ssl.create_default_context(cadata="".join(anchors))
    if system and anchors:
        ctx.load_verify_locations(cadata="".join(anchors))
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def discover(url: str, pin: str, *, timeout: float = 10.0) -> str:
    """The control plane's serving CA (PEM), fetched without a token over a connection not yet
    verified, and accepted only when its pin is `pin`. TrustError when it is not (nothing else
    was sent), Unreachable when there is no answer."""
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(url.rstrip("/") + SERVING_CA_PATH, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=unverified) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise TrustError(f"{url}: asking for its serving CA got {e.code}: is it a meshctl control plane?") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise Unreachable(f"{url}: {getattr(e, 'reason', e)}") from None
    except ValueError:
        raise TrustError(f"{url}: its serving CA answer is not JSON: is it a meshctl control plane?") from None
    ca_pem = doc.get("ca_pem") if isinstance(doc, dict) else None
    if not isinstance(ca_pem, str) or not ca_pem.strip():
        raise TrustError(
            f"{url} names no CA for its serving certificate (an operator's certificate?): give --ca-file instead "
            "of --ca-hash"
        )
    try:
        got = ca_pin(ca_pem)
    except ValueError:
        raise TrustError(f"{url}: its serving CA is not a PEM certificate") from None
    if got != pin:
        raise TrustError(
            f"the control plane at {url} presents the CA {got}, not the pinned {pin}: refused, and no "
            "token was sent (check --ca-hash, or who answers at that address)"
        )
    return ca_pem


# === a client's trust ===


class Trust:
    """How one client verifies the control plane at `url` (see the module doc for the order).
    The SSL context is made on first use, so that a pin's discovery happens when the first
    request does (Unreachable then, like any request). One Trust serves every replica of a
    client with several URLs: they present one serving CA (issue 16), so a pin is discovered
    from whichever URL the first request goes to, and the context trusts them all."""

    def __init__(
        self,
        url: str,
        *,
        ca_file: Path | None = None,
        pin: str | None = None,
        store: Path | None = None,
        extra: Path | None = None,
    ):
        self.url, self.ca_file, self.pin, self.store, self.extra = url, ca_file, pin, store, extra
        self._anchors: list[str] = []
        self._context: ssl.SSLContext | None = None
        #: Whether roots handed out over the verified connection are trusted and stored.
        self._learning = False
        self._lock = threading.Lock()

    @property
    def source(self) -> str:
        """Where the trust came from, for messages."""
        if self.ca_file is not None:
            return f"--ca-file {self.ca_file}"
        if self.pin is not None:
            return f"the CA pinned by --ca-hash {self.pin}"
        if self.store is not None and self.store.exists():
            return f"the CAs trusted at bootstrap ({self.store})"
        return "the system's trust store" + (f" and {self.extra}" if self.extra and self.extra.exists() else "")

    def context(self, url: str | None = None) -> ssl.SSLContext:
        """The context verifying the control plane; made on first use, a pin being checked
        against `url` (`self.url` when None), the URL the request goes to."""
        with self._lock:
            if self._context is None:
                self._context = self._make(url or self.url)
            return self._context

    def _make(self, url: str) -> ssl.SSLContext:
        if self.ca_file is not None:
            return context_for(self._read(self.ca_file, "--ca-file"))
        stored = self._read(self.store, "the trust store") if self.store is not None and self.store.exists() else []
        if self.pin is not None and not any(ca_pin(c) == self.pin for c in stored):
            stored = [discover(url, self.pin)]
            self._save(stored)
        if stored:
            self._anchors, self._learning = stored, True
            return context_for(stored)
        extra = self._read(self.extra, str(self.extra)) if self.extra is not None and self.extra.exists() else []
        return context_for(extra, system=True)

    def learn(self, roots: list[str]) -> None:
        """Trust `roots` too (PEM; the mesh trust bundle, received over a verified connection) when
        trust came from a pin or the store; kept in the store."""
        with self._lock:
            if not self._learning:
                return
            known = {c.strip() for c in self._anchors}
            new = [r for r in roots if r.strip() not in known]
            if not new:
                return
            self._anchors = self._anchors + new
            self._save(self._anchors)
            self._context = context_for(self._anchors)

    def _read(self, path: Path, what: str) -> list[str]:
        try:
            pems = split_pems(path.read_text())
        except (OSError, UnicodeDecodeError) as e:
            raise TrustError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from None
        if not pems:
            raise TrustError(f"{what} {path} holds no PEM certificate")
        return pems

    def _save(self, anchors: list[str]) -> None:
        if self.store is not None:
            self.store.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_secret(self.store, "".join(anchors).strip())
