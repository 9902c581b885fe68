"""Server-side tools: the ``GATEWAY_TOOLS_FILE`` registry and the webhook runner.

The session core decides who runs a call (:class:`gateway.core.history.ToolSpec`
``executor``); this package runs the ``server`` ones, over HTTP.
"""
