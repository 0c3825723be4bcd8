"""sipmesh/gen must be exactly what scripts/genproto makes of proto/ (never stale)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "sipmesh" / "gen" / "sipmesh"


def _tree(base: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(base)): path.read_bytes()
        for path in sorted(base.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "genproto"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    fresh = _tree(tmp_path / "sipmesh")
    committed = _tree(COMMITTED)
    assert fresh, "genproto produced nothing"
    missing = sorted(set(fresh) - set(committed))
    extra = sorted(set(committed) - set(fresh))
    changed = sorted(name for name in set(fresh) & set(committed) if fresh[name] != committed[name])
    stale = {"missing": missing, "extra": extra, "changed": changed}
    assert stale == {"missing": [], "extra": [], "changed": []}, "run scripts/genproto"


def test_generated_modules_import_under_sipmesh_gen() -> None:
    from sipmesh.gen.sipmesh.v1 import common_pb2, router_pb2

    item = router_pb2.RouteItem(id=7, request=router_pb2.RouteRequest(transaction_id="t"))
    item.request.message.source.remote.CopyFrom(common_pb2.Address(host="192.0.2.1", port=5060))
    again = router_pb2.RouteItem.FromString(item.SerializeToString())
    assert again.request.message.source.remote.port == 5060
    # The proto package stays sipmesh.v1 (wire names, gRPC method paths); only the
    # Python module moved under sipmesh.gen.
    assert router_pb2.DESCRIPTOR.package == "sipmesh.v1"
    assert type(again).__module__ == "sipmesh.gen.sipmesh.v1.router_pb2"
