"""The admin page's templates and assets ship with the app, and render."""
from admin.page import STATIC, TEMPLATES, asset, render_admin_page, render_admin_shell, render_message_page
from shared.settings import AdminAuth
from tests.unit.infra.test_package import ROOT, package_files


def test_templates_and_assets_are_in_the_deployed_package():
    package = package_files(ROOT)
    for path in [*TEMPLATES.iterdir(), *STATIC.iterdir()]:
        assert path.relative_to(ROOT).as_posix() in package


def test_every_script_and_style_the_page_names_exists():
    import re

    prompt, shell = render_admin_page(AdminAuth.FUNCTION_KEY), render_admin_shell()
    whole = render_admin_page(AdminAuth.APP_SERVICE, user="ann")
    names = {text: re.findall(r'/api/admin/static/([a-z0-9.-]+)"', text) for text in (prompt, shell, whole)}
    assert names[prompt] == ["admin.css", "api.js", "signin.js"]
    assert names[shell] == ["providers.js", "health.js", "admin.js"]
    assert names[whole] == ["admin.css", "api.js", "providers.js", "health.js", "admin.js"]
    for name in {n for found in names.values() for n in found}:
        assert asset(name).body


def test_messages_are_escaped():
    page = render_message_page("<script>x</script>", "a & b")
    assert "<script>x" not in page and "&lt;script&gt;" in page and "a &amp; b" in page
