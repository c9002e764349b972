"""The Functions host's entry point: create the FunctionApp and register one blueprint per feature.

Nothing here reads settings or builds clients; the blueprints get their services from the
composition root (bootstrap.py) inside each invocation.
"""
import azure.functions as func

from admin import functions as admin_functions
from auth import functions as auth_functions
from sync import functions as sync_functions
from sync.invoices import functions as invoice_functions
from sync.webhooks import functions as webhook_functions
from sync.writeback import functions as writeback_functions

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(admin_functions.bp)
app.register_functions(auth_functions.bp)
app.register_functions(sync_functions.bp)
app.register_functions(invoice_functions.bp)
app.register_functions(writeback_functions.bp)
app.register_functions(webhook_functions.bp)
# the admin page's gateway (App Service Authentication mode) runs the routes registered above
admin_functions.gateway.bind(app)
