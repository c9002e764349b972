"""Write-back: change Partner Center on the partner's behalf (see service.py for the flow).

request.py validates a request, record.py is its row in ``writebackops``, log.py the table's
conditional writes, intake.py accepts a request and queues it once, rules.py Partner Center's
update rules (pure), applier.py applies a record, service.py is the front door;
functions.py is the blueprint and cli.py the ``pcsync writeback`` commands.
"""
