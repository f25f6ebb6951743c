"""One meshing DAG per graph config in $MESHING_CONFIGS (``mesh_<graph name>``).

The factory lives in the plugins folder (``meshing_airflow``), which Airflow puts on the path of
every component; see ``meshing_airflow.factory`` for the DAG's shape.
"""

from meshing_airflow.entries import configs_folder
from meshing_airflow.factory import build_all

for _dag_id, _dag in build_all(configs_folder()).items():
    globals()[_dag_id] = _dag
