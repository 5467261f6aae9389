#!/usr/bin/env python3
"""Build voiyd's test images as OCI archives, deterministically, from /bin/busybox.

Usage: scripts/build-test-images.py OUTDIR

Writes OUTDIR/busybox.tar, OUTDIR/multi.tar, OUTDIR/healthy.tar and OUTDIR/multiarch.tar (OCI image layouts in tar files, as
`skopeo copy oci-archive:...` reads them). Only Python's standard library is used and every
timestamp, owner and compression header is fixed, so the same busybox binary always gives the
same digests. Requires a static busybox (Debian: apt-get install busybox-static).

busybox:test  one layer: /bin/busybox, applet symlinks, /etc/passwd and /etc/group.
multi:test    three layers: the busybox layer (shared), a layer adding user `app` (1000:1000),
              /work and /etc/motd, and a layer adding /work/hello.txt and deleting /etc/motd
              (an OCI whiteout). Config: User "app", WorkingDir /work, Entrypoint
              ["/bin/sh", "-c"], Cmd printing GREETING, uid:gid and cwd, Env with GREETING
              and APP_MODE, ExposedPorts 8080/tcp.
healthy:test  the busybox layer, Cmd sleep 3600, and a Docker HEALTHCHECK (CMD-SHELL
              `test -f /tmp/healthy`, every second, one retry).
multiarch:test  an image index of two platforms (this machine's and a foreign one), each
              the busybox layer with Env PICKED=native or PICKED=foreign.
"""

import gzip
import hashlib
import io
import json
import os
import platform
import sys
import tarfile

BUSYBOX = "/bin/busybox"
APPLETS = [
    "sh", "echo", "sleep", "cat", "env", "id", "pwd", "httpd", "wget", "ls", "true", "false",
    "printf", "test", "[", "mkdir", "rm", "touch", "hostname", "grep", "ps", "kill", "timeout",
    "head", "tail", "wc", "date", "mount", "cp", "mv", "ln", "chmod", "stat", "uname", "whoami",
    "nslookup", "ip", "ifconfig", "nc", "seq", "tr", "cut", "sed", "awk", "df", "find", "xargs",
    "ping", "stty",  # `trap` is an sh builtin: signal handling goes through sh
]
BASE_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
BASE_GROUP = "root:x:0:\nnogroup:x:65534:\n"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
EPOCH = "1970-01-01T00:00:00Z"


def go_arch():
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layer:
    """Collects entries and renders them as a deterministic tar (sorted, fixed metadata)."""

    def __init__(self):
        self.entries = {}

    def dir(self, path, mode=0o755, uid=0, gid=0):
        self.entries[path] = ("dir", mode, uid, gid, None)

    def file(self, path, data, mode=0o644, uid=0, gid=0):
        self.entries[path] = ("file", mode, uid, gid, data)

    def symlink(self, path, target):
        self.entries[path] = ("symlink", 0o777, 0, 0, target)

    def tar(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            for path in sorted(self.entries):
                kind, mode, uid, gid, payload = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, 0
                info.uname = info.gname = ""
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tf.addfile(info)
                elif kind == "symlink":
                    info.type = tarfile.SYMTYPE
                    info.linkname = payload
                    tf.addfile(info)
                else:
                    info.size = len(payload)
                    tf.addfile(info, io.BytesIO(payload))
        return buf.getvalue()


def gzip_bytes(data):
    out = io.BytesIO()
    # mtime=0 and no file name keep the gzip header identical across runs.
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=6, filename="") as gz:
        gz.write(data)
    return out.getvalue()


def busybox_layer(busybox):
    layer = Layer()
    for d in ["bin", "dev", "etc", "proc", "sys", "usr", "usr/bin", "var"]:
        layer.dir(d)
    layer.dir("tmp", mode=0o1777)
    layer.dir("root", mode=0o700)
    layer.file("bin/busybox", busybox, mode=0o755)
    for applet in sorted(set(APPLETS)):
        layer.symlink("bin/" + applet, "busybox")
    layer.file("etc/passwd", BASE_PASSWD.encode())
    layer.file("etc/group", BASE_GROUP.encode())
    return layer


def app_layer():
    layer = Layer()
    layer.dir("etc")
    layer.file("etc/passwd", (BASE_PASSWD + "app:x:1000:1000:app:/work:/bin/sh\n").encode())
    layer.file("etc/group", (BASE_GROUP + "app:x:1000:\nextra:x:2000:app\n").encode())
    layer.file("etc/motd", b"this file is deleted by the next layer\n")
    layer.dir("work", mode=0o755, uid=1000, gid=1000)
    return layer


def content_layer():
    layer = Layer()
    layer.dir("etc")
    layer.file("etc/.wh.motd", b"")  # OCI whiteout: deletes /etc/motd of the layer below
    layer.dir("work", mode=0o755, uid=1000, gid=1000)
    layer.file("work/hello.txt", b"hello from layer 3\n", uid=1000, gid=1000)
    return layer


def image(layers, config, arch=None):
    """Returns the blobs of an OCI image and its manifest descriptor."""
    blobs = {}
    layer_descs, diff_ids = [], []
    for layer in layers:
        raw = layer.tar()
        gz = gzip_bytes(raw)
        diff_ids.append(sha256(raw))
        blobs[sha256(gz)] = gz
        layer_descs.append({"mediaType": MEDIA_LAYER, "digest": sha256(gz), "size": len(gz)})
    cfg = {
        "created": EPOCH,
        "architecture": arch or go_arch(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": EPOCH, "created_by": "voiyd build-test-images.py"} for _ in layers],
    }
    cfg_bytes = canonical(cfg)
    blobs[sha256(cfg_bytes)] = cfg_bytes
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": sha256(cfg_bytes), "size": len(cfg_bytes)},
        "layers": layer_descs,
    }
    m_bytes = canonical(manifest)
    blobs[sha256(m_bytes)] = m_bytes
    return blobs, {"mediaType": MEDIA_MANIFEST, "digest": sha256(m_bytes), "size": len(m_bytes),
                   "annotations": {"org.opencontainers.image.ref.name": "test"}}


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_archive(path, blobs, manifest_desc):
    layout = Layer()
    layout.file("oci-layout", canonical({"imageLayoutVersion": "1.0.0"}))
    layout.file("index.json", canonical({"schemaVersion": 2, "mediaType": MEDIA_INDEX,
                                         "manifests": [manifest_desc]}))
    layout.dir("blobs")
    layout.dir("blobs/sha256")
    for digest, data in blobs.items():
        layout.file("blobs/sha256/" + digest.split(":", 1)[1], data)
    data = layout.tar()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    print(f"wrote {path} (manifest {manifest_desc['digest']})", file=sys.stderr)


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTDIR")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    try:
        with open(BUSYBOX, "rb") as f:
            busybox = f.read()
    except OSError as e:
        sys.exit(f"cannot read {BUSYBOX}: {e}; apt-get install busybox-static")
    path_env = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    base = busybox_layer(busybox)
    blobs, desc = image([base], {"Env": [path_env], "Cmd": ["sh"]})
    write_archive(os.path.join(outdir, "busybox.tar"), blobs, desc)

    blobs, desc = image(
        [base, app_layer(), content_layer()],
        {
            "User": "app",
            "WorkingDir": "/work",
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ['echo "$GREETING from $(id -u):$(id -g) in $(pwd)"'],
            "Env": [path_env, "GREETING=hello", "APP_MODE=test"],
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {"org.voiyd.test": "multi"},
        },
    )
    write_archive(os.path.join(outdir, "multi.tar"), blobs, desc)

    # Docker's HEALTHCHECK extension of the image config: healthy once /tmp/healthy exists.
    blobs, desc = image(
        [base],
        {
            "Env": [path_env],
            "Cmd": ["sleep", "3600"],
            "Healthcheck": {
                "Test": ["CMD-SHELL", "test -f /tmp/healthy"],
                "Interval": 1_000_000_000,
                "Timeout": 1_000_000_000,
                "Retries": 1,
            },
        },
    )
    write_archive(os.path.join(outdir, "healthy.tar"), blobs, desc)

    # A multi-platform index, as Docker Hub serves most images: this machine's platform and
    # a foreign one, each saying which it is (a node must pick its own).
    foreign = "s390x" if go_arch() != "s390x" else "ppc64le"
    blobs = {}
    entries = []
    for arch, picked in [(foreign, "foreign"), (go_arch(), "native")]:
        b, d = image([base], {"Env": [path_env, f"PICKED={picked}"], "Cmd": ["sh"]}, arch)
        blobs.update(b)
        entries.append({"mediaType": MEDIA_MANIFEST, "digest": d["digest"], "size": d["size"],
                        "platform": {"architecture": arch, "os": "linux"}})
    index = canonical({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": entries})
    blobs[sha256(index)] = index
    write_archive(os.path.join(outdir, "multiarch.tar"), blobs,
                  {"mediaType": MEDIA_INDEX, "digest": sha256(index), "size": len(index),
                   "annotations": {"org.opencontainers.image.ref.name": "test"}})


if __name__ == "__main__":
    main()
