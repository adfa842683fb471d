"""Spark job: read the messages one producer run wrote to Kafka, clean them, and load them
into the Postgres table rappel_conso, de-duplicated on reference_fiche.

Spark's own Kafka source (spark-sql-kafka) is a set of jars fetched from a Maven repository
at submit time; where that is not possible the job reads the topic with kafka-python in the
driver, exactly the offset range the producer reported, and builds the DataFrame from it.
With the connector at hand, spark.read.format("kafka") with startingOffsets/endingOffsets
set from the same range is the drop-in replacement for read_range().

Cleaning, as the original pipeline does: drop the versioning fields (ndeg_de_version,
rappelguid), merge the risk and its complementary description into one column, split
"Du dd/mm/yyyy au dd/mm/yyyy" (date_debut_fin_de_commercialisation) into two dates, strip
accents from the free-text columns. Then one row per reference_fiche (the highest
version within the batch), inserted with ON CONFLICT (reference_fiche) DO NOTHING, so a
day loaded twice adds no row.

Environment: KAFKA_BOOTSTRAP_SERVERS (default broker:9092), RANGE (the producer's last
line: {"topic", "partition", "start", "end", ...}), DAGD_CONN_WAREHOUSE (a postgres:// URI,
from the dagd connection `warehouse`). Prints as its last line {"read": N, "inserted": M}.
"""
import json
import os
import sys
import unicodedata

import psycopg2
from kafka import KafkaConsumer, TopicPartition
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window
from pyspark.sql.types import IntegerType, StringType, StructField, StructType

TEXT_FIELDS = [
    "reference_fiche", "nature_juridique_du_rappel", "categorie_de_produit",
    "sous_categorie_de_produit", "nom_de_la_marque_du_produit", "noms_des_modeles_ou_references",
    "identification_des_produits", "conditionnements", "date_debut_fin_de_commercialisation",
    "temperature_de_conservation", "marque_de_salubrite", "informations_complementaires",
    "zone_geographique_de_vente", "distributeurs", "motif_de_rappel",
    "risques_encourus_par_le_consommateur", "preconisations_sanitaires",
    "description_complementaire_du_risque", "conduites_a_tenir_par_le_consommateur",
    "numero_de_contact", "modalites_de_compensation", "date_de_fin_de_la_procedure_de_rappel",
    "informations_complementaires_publiques", "liens_vers_les_images",
    "lien_vers_la_liste_des_produits", "lien_vers_la_liste_des_distributeurs",
    "lien_vers_affichette_pdf", "lien_vers_la_fiche_rappel", "rappelguid", "date_de_publication",
]
# Free text whose accents are stripped (not links, references or dates).
PLAIN_TEXT = [f for f in TEXT_FIELDS if not f.startswith(("lien", "liens", "reference", "date", "rappelguid"))]
# The table's columns, in order (create_table.sql).
DB_COLUMNS = [
    "reference_fiche", "nature_juridique_du_rappel", "categorie_de_produit",
    "sous_categorie_de_produit", "nom_de_la_marque_du_produit", "noms_des_modeles_ou_references",
    "identification_des_produits", "conditionnements", "date_debut_commercialisation",
    "date_fin_commercialisation", "temperature_de_conservation", "marque_de_salubrite",
    "informations_complementaires", "zone_geographique_de_vente", "distributeurs",
    "motif_de_rappel", "risques_encourus_par_le_consommateur", "preconisations_sanitaires",
    "conduites_a_tenir_par_le_consommateur", "numero_de_contact", "modalites_de_compensation",
    "date_de_fin_de_la_procedure_de_rappel", "informations_complementaires_publiques",
    "liens_vers_les_images", "lien_vers_la_liste_des_produits",
    "lien_vers_la_liste_des_distributeurs", "lien_vers_affichette_pdf",
    "lien_vers_la_fiche_rappel", "date_de_publication",
]


def read_range(servers, rng):
    """The values of the messages [start, end) of one partition, as JSON objects."""
    tp = TopicPartition(rng["topic"], int(rng["partition"]))
    start, end = int(rng["start"]), int(rng["end"])
    out = []
    if end <= start:
        return out
    c = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False,
                      consumer_timeout_ms=30000, client_id="rappel-spark-load")
    try:
        c.assign([tp])
        c.seek(tp, start)
        for msg in c:
            if msg.offset >= end:
                break
            out.append(json.loads(msg.value))
            if msg.offset == end - 1:
                break
    finally:
        c.close()
    if len(out) != end - start:
        sys.exit("spark_load: read %d messages of [%d, %d) from %s" % (len(out), start, end, tp))
    return out


# French accented letters and their plain forms, for Spark's translate() (a built-in: no
# Python worker per row, as a UDF would need).
ACCENTED = "àâäáãåçéèêëíìîïñóòôöõúùûüýÿÀÂÄÁÃÅÇÉÈÊËÍÌÎÏÑÓÒÔÖÕÚÙÛÜÝŸ"
PLAIN = "".join(unicodedata.normalize("NFKD", ch)[0] for ch in ACCENTED)


def main():
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "broker:9092").split(",")
    rng = json.loads(os.environ["RANGE"])
    dsn = os.environ["DAGD_CONN_WAREHOUSE"]
    values = read_range(servers, rng)
    print("spark_load: read %d messages from %s[%s] offsets %s..%s" % (
        len(values), rng["topic"], rng["partition"], rng["start"], rng["end"]), flush=True)

    spark = (SparkSession.builder.master("local[1]").appName("rappel_conso_load")
             .config("spark.driver.memory", "512m").config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "1").config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    schema = StructType([StructField(f, StringType()) for f in TEXT_FIELDS] +
                        [StructField("ndeg_de_version", IntegerType())])
    rows = [tuple(None if v.get(f) is None else str(v[f]) for f in TEXT_FIELDS) +
            (int(v.get("ndeg_de_version") or 0),) for v in values]
    df = spark.createDataFrame(rows, schema)

    for f in PLAIN_TEXT:
        df = df.withColumn(f, F.translate(F.col(f), ACCENTED, PLAIN))
    period = F.col("date_debut_fin_de_commercialisation")
    df = (df
          .withColumn("date_debut_commercialisation",
                      F.to_date(F.regexp_extract(period, r"(\d{2}/\d{2}/\d{4})", 1), "dd/MM/yyyy"))
          .withColumn("date_fin_commercialisation",
                      F.to_date(F.regexp_extract(period, r"au (\d{2}/\d{2}/\d{4})", 1), "dd/MM/yyyy"))
          .withColumn("risques_encourus_par_le_consommateur", F.concat_ws(
              " - ", F.col("risques_encourus_par_le_consommateur"), F.col("description_complementaire_du_risque")))
          .withColumn("date_de_fin_de_la_procedure_de_rappel", F.to_date("date_de_fin_de_la_procedure_de_rappel"))
          .withColumn("date_de_publication", F.to_date("date_de_publication")))
    # one row per reference_fiche in this batch: its latest version
    latest = Window.partitionBy("reference_fiche").orderBy(F.col("ndeg_de_version").desc())
    df = (df.withColumn("n", F.row_number().over(latest)).where(F.col("n") == 1)
          .select(*DB_COLUMNS))
    batch = [tuple(r) for r in df.collect()]
    spark.stop()

    cols = ", ".join(DB_COLUMNS)
    marks = ", ".join(["%s"] * len(DB_COLUMNS))
    sql = ("INSERT INTO rappel_conso (%s) VALUES (%s) ON CONFLICT (reference_fiche) DO NOTHING"
           % (cols, marks))
    inserted = 0
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        for row in batch:
            cur.execute(sql, row)
            inserted += cur.rowcount
    conn.close()
    print("spark_load: %d distinct reference_fiche in the batch, %d new rows in rappel_conso" % (
        len(batch), inserted), flush=True)
    print(json.dumps({"read": len(values), "distinct": len(batch), "inserted": inserted}))


if __name__ == "__main__":
    main()
