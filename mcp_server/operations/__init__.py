"""The operations, one module each. A mutation's module exposes ``OPERATION`` (its
MCP tool name), ``plan(ctx, request) -> Plan`` and ``run(ctx, plan, progress) ->
Result``; a read exposes one function of ``(ctx, request)``. Operations receive a
``core.context.OperationContext``, never the Manager."""
