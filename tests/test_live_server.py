import requests


def test_a_real_server_serves_the_admin_login(hub_server):
    response = requests.get(f"{hub_server}/admin/login/", timeout=10)
    assert response.status_code == 200
    assert "Django administration" in response.text or "Optuna Hub" in response.text
