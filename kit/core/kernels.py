"""papermill with kernels that do not print "Kernel is running over TCP without encryption".

Where the warning comes from: ipykernel 7 (`IPKernelApp.init_sockets`) logs it at start whenever
its connection file says TCP and carries no CurveZMQ key, and jupyter_client 8.10's
KernelManager provisions keys only when asked (`transport_encryption`, default "disabled"), so
every notebook papermill ran printed it. The kit's manager asks for them ("auto": keys when the
kernelspec declares curve, as ipykernel's own does); where pyzmq has no curve support it uses
IPC sockets instead, which the warning also accepts. `python -m kit.core.kernels ARGS` is
papermill's command line with that manager (run_all.sh runs the notebooks so); API callers pass
`kernel_manager_class=QuietKernelManager` to `papermill.execute_notebook`.
"""

from __future__ import annotations

import sys

import zmq
from jupyter_client.manager import AsyncKernelManager
from traitlets import default


class QuietKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels talk over CurveZMQ-encrypted TCP (else IPC sockets)."""

    @default("transport_encryption")
    def _encrypt_when_possible(self) -> str:
        return "auto" if zmq.has("curve") else "disabled"

    @default("transport")
    def _ipc_without_curve(self) -> str:
        return "tcp" if zmq.has("curve") else "ipc"


def main(argv: list[str] | None = None) -> None:
    """papermill's CLI (same options), its nbclient engine using QuietKernelManager."""
    from papermill.cli import papermill
    from papermill.engines import NBClientEngine, papermill_engines

    class QuietEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            kwargs.setdefault("kernel_manager_class", QuietKernelManager)
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(None, QuietEngine)
    papermill_engines.register("nbclient", QuietEngine)
    papermill.main(args=sys.argv[1:] if argv is None else argv, prog_name="papermill")


if __name__ == "__main__":
    main()
