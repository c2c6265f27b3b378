
        SELECT * FROM `${dataset}.events`
        WHERE TRUE
        QUALIFY ROW_NUMBER() OVER (PARTITION BY event_instance_id ORDER BY loaded_at, origin, line_number) = 1
    