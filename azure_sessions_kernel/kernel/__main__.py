"""Start the kernel: ``python -m azure_sessions_kernel.kernel -f CONNECTION_FILE [--AzureSessionsKernel.option=...]``."""

from .kernel import AzureSessionsKernel, AzureSessionsKernelApp

if __name__ == "__main__":
    AzureSessionsKernelApp.launch_instance(kernel_class=AzureSessionsKernel)
