"""Composition root: create the FunctionApp and register one blueprint per trigger family.

Nothing here reads settings or builds clients; services are built on first use inside an
invocation (shared/runtime.py).
"""
import azure.functions as func

from admin import functions as admin_http
from auth import functions as auth_http
from sync import queues as sync_queues
from sync import functions as sync_timers
from sync.webhooks import functions as sync_webhooks
from sync.writeback import functions as sync_writebacks

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(admin_http.bp)
app.register_functions(auth_http.bp)
app.register_functions(sync_timers.bp)
app.register_functions(sync_queues.bp)
app.register_functions(sync_writebacks.bp)
app.register_functions(sync_webhooks.bp)
