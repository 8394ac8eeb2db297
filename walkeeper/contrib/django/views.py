"""The dashboard: walkeeper's status page (the `status --html` page) and its JSON, for
staff only. Anonymous users get the login redirect, never data; a logged-in user who
is neither staff nor holds WALKEEPER_DASHBOARD_PERMISSION gets 403."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from walkeeper.contrib.django import conf
from walkeeper.errors import WalkeeperError


def allowed(user) -> bool:
    if not (user.is_authenticated and user.is_active):
        return False
    perm = conf.get("WALKEEPER_DASHBOARD_PERMISSION")
    return bool(user.is_staff or (perm and user.has_perm(perm)))


def staff_only(view):
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not allowed(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return never_cache(require_safe(wrapper))


def _collect() -> dict:
    from walkeeper import commands

    return commands.status(conf.load())


@staff_only
def dashboard(request):
    from walkeeper.output.html import render

    try:
        data = _collect()
    except WalkeeperError as exc:
        return HttpResponse(f"walkeeper: {exc.line()}\n", status=503,
                            content_type="text/plain; charset=utf-8")
    return HttpResponse(render(data), content_type="text/html; charset=utf-8")


@staff_only
def status_json(request):
    try:
        data = _collect()
    except WalkeeperError as exc:
        return JsonResponse({"error": exc.line()}, status=503)
    return JsonResponse(data, json_dumps_params={"default": str})
