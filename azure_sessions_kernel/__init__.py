"""azure-sessions-kernel: a Jupyter kernel whose cells run in an Azure Container
Apps dynamic session, or in the sandboxed local session pool this package ships.

Layers, one-way (each only imports the ones before it):

``wire``    the data-plane contract: routes and JSON shapes per api-version
``client``  sync and async HTTP clients built on ``wire``
``pool``    the local session pool (server, sessions, sandbox), built on ``wire``
``kernel``  the Jupyter kernel, built on ``client``
"""

__version__ = "0.1.0"
