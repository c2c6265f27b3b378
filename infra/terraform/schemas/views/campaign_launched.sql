
        SELECT * FROM `${dataset}.campaign_launches`
        WHERE TRUE
        QUALIFY ROW_NUMBER() OVER (PARTITION BY campaign ORDER BY launched_at, launch_id) = 1
    