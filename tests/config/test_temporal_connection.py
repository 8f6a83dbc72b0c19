"""How Quench reaches a Temporal behind TLS (a cluster of one's own, Temporal Cloud)."""

import pytest
from pydantic import ValidationError
from temporalio.service import TLSConfig

from config.settings import Settings, settings_problem
from config.temporal import _tls


def test_a_client_certificate_means_mtls(tmp_path):
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_bytes(b"CERT")
    key.write_bytes(b"KEY")
    tls = _tls(Settings(lab=True, temporal_tls_cert=cert, temporal_tls_key=key))
    assert isinstance(tls, TLSConfig)
    assert (tls.client_cert, tls.client_private_key) == (b"CERT", b"KEY")


def test_an_api_key_needs_tls_and_plain_is_the_default():
    assert _tls(Settings(lab=True, temporal_api_key="k" * 20)) is True
    assert _tls(Settings(lab=True, temporal_tls=True)) is True
    assert _tls(Settings(lab=True)) is False


@pytest.mark.parametrize("given", ["cert", "missing"])
def test_a_certificate_without_its_key_or_file_is_refused(tmp_path, given):
    cert = tmp_path / "client.pem"
    if given == "cert":
        cert.write_bytes(b"CERT")
        values = {"temporal_tls_cert": cert}
        expected = "go together"
    else:
        values = {"temporal_tls_cert": cert, "temporal_tls_key": tmp_path / "k"}
        expected = "no such file"
    with pytest.raises(ValidationError) as refused:
        Settings(lab=True, **values)
    assert expected in settings_problem(refused.value)
