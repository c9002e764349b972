"""The local host (a development tool, not deployed): `pcsync serve` runs the function app's
registered functions on this machine the way the Functions host does, and `pcsync serve
--simulator` adds the playground (Azurite and the Partner Center simulator, kept in a folder)."""
