
        SELECT a.* FROM `${dataset}.campaign_assignments_all` AS a
        JOIN `${dataset}.campaign_launched` AS l ON l.launch_id = a.launch_id
    