"""``jupyter_kernel_test`` (PyPI) conformance suites for the installed kernelspec, on both pools.

Every sample the suite knows is given, so none of its checks is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import jupyter_kernel_test as jkt
import pytest

from ._support import KERNEL_NAME, environment, install_kernelspec, write_kernel_config

pytestmark = pytest.mark.slow


class _OnPool:
    """The kernelspec installed in a temporary prefix, configured for one of the shared pools."""

    kernel_name = KERNEL_NAME
    pool_fixture = "local_pool"

    @classmethod
    def setUpClass(cls) -> None:
        """Started by the fixture below instead, once the pool is known."""

    @classmethod
    def tearDownClass(cls) -> None:
        """Stopped by the fixture below."""

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _kernel_on_pool(cls, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
        pool = request.getfixturevalue(cls.pool_fixture)
        jupyter_path = install_kernelspec(tmp_path_factory.mktemp("prefix"))
        ipython_dir = tmp_path_factory.mktemp("ipython")
        write_kernel_config(ipython_dir, endpoint=pool.endpoint, token=pool.token)
        suite = next(base for base in cls.__mro__ if base in (jkt.KernelTests, jkt.IopubWelcomeTests))
        with environment(JUPYTER_PATH=str(jupyter_path), IPYTHONDIR=str(ipython_dir)):
            suite.setUpClass.__func__(cls)
            yield
            suite.tearDownClass.__func__(cls)


class _Samples(_OnPool):
    language_name = "python"
    file_extension = ".py"
    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [{"text": "zi", "matches": {"zip"}}, {"text": "%uplo", "matches": {"%upload"}}]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n", "%upload data.csv"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "zip?"
    code_generate_error = "raise ValueError('conformance')"
    code_execute_result = [
        {"code": "1+2+3", "result": "6"},
        {"code": "[n*n for n in range(1, 4)]", "result": "[1, 4, 9]"},
        {"code": "import pandas as pd; pd.DataFrame({'a': [1]})", "mime": "text/html"},
    ]
    code_display_data = [
        {"code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))", "mime": "text/html"},
        {"code": "from IPython.display import Math, display; display(Math('\\\\frac{1}{2}'))", "mime": "text/latex"},
        {"code": "import matplotlib.pyplot as plt; plt.plot([1, 2]); plt.show()", "mime": "image/png"},
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "range", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"


class TestConformanceOnLocalPool(_Samples, jkt.KernelTests):
    pool_fixture = "local_pool"


class TestConformanceOnAzureStrictPool(_Samples, jkt.KernelTests):
    pool_fixture = "strict_pool"


class TestIopubWelcome(_OnPool, jkt.IopubWelcomeTests):
    support_iopub_welcome = True
