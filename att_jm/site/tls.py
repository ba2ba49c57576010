"""TLS for the site's broker: a CA of its own and a server certificate it signs (openssl).

Made once, at the first `att-jm setup`: `var/tls/ca.crt` (clients verify the broker with it),
`ca.key` (0600; signs the server certificate, and client certificates if you make some),
`server.crt` and `server.key` (the broker's; for `localhost` and 127.0.0.1, ten years).
To use real certificates, put yours in place of `server.crt`/`server.key` (and `ca.crt`, the
CA that signed them) and restart the broker: see docs/security.md, "Certificates".
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from att_jm.errors import AttJmError
from att_jm.site.users import private_umask

DAYS: Final = 3650


class TlsError(AttJmError):
    """The certificates could not be made (the message says why)."""


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    ca_key: Path
    cert: Path
    key: Path

    @classmethod
    def under(cls, directory: Path) -> TlsFiles:
        return cls(directory / "ca.crt", directory / "ca.key", directory / "server.crt",
                   directory / "server.key")

    def exist(self) -> bool:
        return all(path.exists() for path in (self.ca, self.ca_key, self.cert, self.key))


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise TlsError("openssl is not installed (Debian: apt-get install openssl)")
    done = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TlsError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")


def make_certificates(directory: Path, hosts: tuple[str, ...] = ("localhost",),
                      addresses: tuple[str, ...] = ("127.0.0.1",)) -> TlsFiles:
    """A CA and a server certificate under `directory` (kept when they exist already)."""
    files = TlsFiles.under(directory)
    if files.exist():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    names = ",".join([*(f"DNS:{host}" for host in hosts), *(f"IP:{ip}" for ip in addresses)])
    request = directory / "server.csr"
    extensions = directory / "server.ext"
    with private_umask():
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", str(files.ca_key), "-out", str(files.ca),
                 "-days", str(DAYS), "-subj", "/CN=ATT Job Manager local CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", str(files.key), "-out", str(request),
                 "-subj", f"/CN={hosts[0]}")
        extensions.write_text(f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n",
                              encoding="ascii")
        _openssl("x509", "-req", "-in", str(request), "-CA", str(files.ca),
                 "-CAkey", str(files.ca_key), "-CAcreateserial", "-out", str(files.cert),
                 "-days", str(DAYS), "-extfile", str(extensions))
    for leftover in (request, extensions, directory / "ca.srl"):
        leftover.unlink(missing_ok=True)
    files.ca.chmod(0o644)
    files.cert.chmod(0o644)
    return files
