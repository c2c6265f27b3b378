
        SELECT * FROM `${dataset}.files`
        WHERE TRUE
        QUALIFY ROW_NUMBER() OVER (
            PARTITION BY origin
            ORDER BY CASE status WHEN 'started' THEN 0 WHEN 'gone' THEN 1 WHEN 'failed' THEN 1 ELSE 2 END DESC,
                     recorded_at DESC
        ) = 1
    