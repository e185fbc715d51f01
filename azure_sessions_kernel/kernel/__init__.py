"""The Jupyter kernel: ``AzureSessionsKernel`` and its kernelspec installer.

``python -m azure_sessions_kernel.kernel -f CONNECTION_FILE`` starts the
kernel (that is what the kernelspec's ``argv`` runs);
``python -m azure_sessions_kernel.kernel.install`` installs the kernelspec.
"""

from .kernel import ENDPOINT_ENV, AzureSessionsKernel

__all__ = ["ENDPOINT_ENV", "AzureSessionsKernel"]
