"""Everything of ours that imports Airflow, importable by every Airflow component.

Airflow puts its plugins folder (this repository's ``plugins/``) on the path of the scheduler,
the DAG processor, workers and the triggerer, and the triggerer never loads triggers from the
DAG bundle, so the DAG factory (``factory``), the batch operator (``operators``), its trigger
(``triggers``), the configs entries (``entries``), the trigger form (``params``) and the one
mapping from our exceptions to Airflow outcomes (``outcomes``) live here. ``dags/`` only calls
the factory; the work itself is ``meshing_core.run.lifecycle``.
"""
