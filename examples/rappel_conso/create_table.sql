SET client_min_messages = warning;
-- The table the RappelConso example loads (examples/rappel_conso.yml). reference_fiche,
-- the recall's identifier, is the primary key: the loader inserts with
-- ON CONFLICT (reference_fiche) DO NOTHING, so loading a day again adds no row.
CREATE TABLE IF NOT EXISTS rappel_conso (
    reference_fiche                        text PRIMARY KEY,
    nature_juridique_du_rappel             text,
    categorie_de_produit                   text,
    sous_categorie_de_produit              text,
    nom_de_la_marque_du_produit            text,
    noms_des_modeles_ou_references         text,
    identification_des_produits            text,
    conditionnements                       text,
    date_debut_commercialisation           date,
    date_fin_commercialisation             date,
    temperature_de_conservation            text,
    marque_de_salubrite                    text,
    informations_complementaires           text,
    zone_geographique_de_vente             text,
    distributeurs                          text,
    motif_de_rappel                        text,
    risques_encourus_par_le_consommateur   text,
    preconisations_sanitaires              text,
    conduites_a_tenir_par_le_consommateur  text,
    numero_de_contact                      text,
    modalites_de_compensation              text,
    date_de_fin_de_la_procedure_de_rappel  date,
    informations_complementaires_publiques text,
    liens_vers_les_images                  text,
    lien_vers_la_liste_des_produits        text,
    lien_vers_la_liste_des_distributeurs   text,
    lien_vers_affichette_pdf               text,
    lien_vers_la_fiche_rappel              text,
    date_de_publication                    date NOT NULL,
    loaded_at                              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS rappel_conso_date_de_publication ON rappel_conso (date_de_publication);
