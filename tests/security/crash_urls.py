"""The app's URLconf plus one view that fails, so the tests can see a real 500 page."""

from django.urls import path

from config.urls import urlpatterns as app_urlpatterns


def crash(request):
    raise RuntimeError("a bug in a view, on purpose")


urlpatterns = [path("crash/", crash), *app_urlpatterns]
