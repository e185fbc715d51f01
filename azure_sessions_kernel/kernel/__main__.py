"""Start the kernel: ``python -m azure_sessions_kernel.kernel -f CONNECTION_FILE [--AzureSessionsKernel.option=...]``."""

from ipykernel.kernelapp import IPKernelApp

from .kernel import AzureSessionsKernel

if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=AzureSessionsKernel)
