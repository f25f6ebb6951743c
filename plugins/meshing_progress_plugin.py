"""The Airflow plugin of the meshing DAGs: the "Layer progress" tab on every run's page.

Airflow loads plugins from the top of the plugins folder; the app and its data live in
``meshing_airflow.progress_view``.
"""

from airflow.plugins_manager import AirflowPlugin
from meshing_airflow.progress_view import URL_PREFIX, create_app, external_view


class MeshingProgressPlugin(AirflowPlugin):
    name = "meshing_progress"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Meshing progress"}]
    external_views = [external_view()]
