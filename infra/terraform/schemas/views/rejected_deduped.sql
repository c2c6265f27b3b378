
        SELECT * FROM `${dataset}.rejected`
        WHERE TRUE
        QUALIFY ROW_NUMBER() OVER (PARTITION BY rejected_id ORDER BY rejected_at DESC) = 1
    