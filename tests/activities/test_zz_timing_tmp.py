import time
from tests.activities.test_eradication import *  # noqa
from tests.activities.test_eradication import account_state, ARRANGE

def test_timing(aws, eradication, activity_env, request):
    t=time.perf_counter(); request.getfixturevalue("neighbours"); t1=time.perf_counter()
    account_state(aws); t2=time.perf_counter()
    account_state(aws); t3=time.perf_counter()
    target = ARRANGE["delete_user"](aws); t4=time.perf_counter()
    remove(activity_env, eradication, "delete_user", target.name); t5=time.perf_counter()
    print(f"\nneighbours {t1-t:.3f} state {t2-t1:.3f} state2 {t3-t2:.3f} arrange {t4-t3:.3f} remove {t5-t4:.3f}")
