"""The stores of a configuration for worker threads (verify-chain's readers, the
background pusher, the prefetcher): a type whose connection serves one thread at a
time (registry: shared=False, SFTP) gets one store object per thread; a shared type
(local) one object for all. close() closes every store the pool opened.

threading is imported when a pool is made: the served push and fetch never make one.
"""

from __future__ import annotations

from walkeeper.stores.registry import store_type


class StorePool:
    def __init__(self, cfgs: list, keyring=None, stores: list | None = None):
        """cfgs: StoreConfigs, in order; stores: already opened ones (same order) that
        the pool may hand out where a type is shared, and never closes."""
        import threading

        from walkeeper.stores import open_store

        self._open = lambda i: open_store(cfgs[i], keyring)
        self.cfgs = list(cfgs)
        self._given = list(stores) if stores is not None else [None] * len(self.cfgs)
        self._shared: dict[int, object] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list = []

    def get(self, index: int):
        if store_type(self.cfgs[index].type).shared:
            with self._lock:
                store = self._given[index] or self._shared.get(index)
                if store is None:
                    store = self._shared[index] = self._open(index)
                    self._opened.append(store)
            return store
        mine = getattr(self._local, "stores", None)
        if mine is None:
            mine = self._local.stores = {}
        if index not in mine:
            mine[index] = self._open(index)
            with self._lock:
                self._opened.append(mine[index])
        return mine[index]

    def all(self) -> list:
        """This thread's stores, in configuration order."""
        return [self.get(i) for i in range(len(self.cfgs))]

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for s in opened:
            try:
                s.close()
            except Exception:       # closing is best effort; the work is done
                pass
