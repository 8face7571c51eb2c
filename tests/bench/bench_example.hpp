// The example the benchmarks write: a ~1.6 KB line, as processors produce.
#pragma once

#include <string>

namespace bench {

// A realistic ~1.6 KB line: a ~1 KB narrative plus instruction, input and metadata.
inline std::string narrative(const std::string& who, int i) {
    std::string n = "Blood glucose data for " + who + " example " + std::to_string(i) +
                    " shows 450 readings over a 30-day period with a mean of 142.3 mg/dL (estimated A1c 6.6%). ";
    while (n.size() < 950) {
        n += "Time in range was 71% with post-dinner peaks averaging 212 mg/dL and three nocturnal lows. ";
    }
    return n;
}

inline const char* kMessage =
    R"({"record_type":"BloodGlucoseRecord","user_id":"user-1042","correlation_id":"c-7f3a-0001","bucket":"health-data","key":"raw/BloodGlucoseRecord/2025/11/18/user-1042.avro"})";
inline const char* kResult =
    R"({"quality_score":0.95,"record_count":450,"processing_time_seconds":2.3,"clinical_insights":{"control_status":"fair","hypoglycemic_events":3,"hyperglycemic_events":45},"processing_timestamp":"2025-11-18T10:30:00Z"})";
}  // namespace bench
