"""Write one backup in a child process, for the crash tests of the backup store.

Usage: backup_worker.py KIND WHERE BACKUP_ID [RECORDS TARGET].  KIND is ``local``
(WHERE: a directory holding ``vol`` and ``bk`` stores) or ``rbd`` (WHERE: a ceph.conf).
The volume is ``volumes/v`` at snapshot ``s1``; with RECORDS (a JSON file of a chain's
``BackupData.to_dict()``) the chain is restored into ``volumes/TARGET`` instead.  The
test sets STRATO_STORAGE_CRASHPOINT so the store SIGKILLs this process at a named point.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from strato.backup.store import BackupData, BackupStore
from strato.storage import open_engine


def main() -> None:
    kind, where, backup_id = sys.argv[1:4]
    if kind == "local":
        vol = open_engine("local", root=Path(where) / "vol")
        store = BackupStore(open_engine("local", root=Path(where) / "bk", pools=("backups",)),
                            "backups")
    else:
        vol = open_engine("rbd", ceph_conf=where)
        store = BackupStore(open_engine("rbd", ceph_conf=where, pools=("backups",)), "backups")
    if len(sys.argv) > 4:
        chain = [BackupData.from_dict(d) for d in json.loads(Path(sys.argv[4]).read_text())]
        with vol.open("volumes", sys.argv[5]) as target:
            store.restore(chain, target)
    else:
        with vol.open("volumes", "v", snapshot="s1") as src:
            store.write(backup_id, src, None, None)
    print("done", flush=True)


if __name__ == "__main__":
    main()
