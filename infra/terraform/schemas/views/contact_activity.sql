
        SELECT u.contact_id, COALESCE(e.events_30d, 0) AS events_30d,
               CASE WHEN COALESCE(e.events_30d, 0) >= ${high} THEN 'high'
                    WHEN COALESCE(e.events_30d, 0) >= ${medium} THEN 'medium'
                    WHEN COALESCE(e.events_30d, 0) >= ${low} THEN 'low'
                    ELSE 'dormant' END AS activity
        FROM `${dataset}.users_latest` AS u
        LEFT JOIN (
            SELECT contact_id, COUNT(*) AS events_30d FROM `${dataset}.events_deduped`
            WHERE timestamp >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 30 DAY)
            GROUP BY contact_id
        ) AS e ON e.contact_id = u.contact_id
    