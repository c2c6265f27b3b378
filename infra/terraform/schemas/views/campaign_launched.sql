
        SELECT * FROM `${dataset}.campaign_launches`
        WHERE TRUE
        QUALIFY ROW_NUMBER() OVER (PARTITION BY campaign, IFNULL(wave, 0) ORDER BY launched_at, launch_id) = 1
    