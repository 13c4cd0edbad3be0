from django.urls import re_path

from dashboard_panel.content.cloudlet import views

urlpatterns = [
    re_path(r'^$', views.IndexView.as_view(), name='index'),
    re_path(r'^import/$', views.ImportBaseView.as_view(), name='import'),
    re_path(r'^resume/$', views.ResumeBaseView.as_view(), name='resume'),
    re_path(r'^synthesis/$', views.SynthesisView.as_view(), name='synthesis'),
    re_path(r'^(?P<instance_id>[^/]+)/handoff/$', views.HandoffView.as_view(),
            name='handoff'),
    re_path(r'^overlays/(?P<image_id>[^/]+)/download/$', views.download_overlay,
            name='download'),
]
